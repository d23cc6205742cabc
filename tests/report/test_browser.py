"""Open report.html in a real headless Chromium: it parses, every embedded plot decodes, and it paints."""

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} not found: install Chromium (Debian: apt-get install -y chromium) to render report.html",
)

# Appended to a copy of the report: after load, count the images the browser actually decoded.
PROBE = ('<script>window.addEventListener("load",()=>{const ims=[...document.images];document.body.dataset.'
         'imagesOk=ims.filter(i=>i.complete&&i.naturalWidth>0).length+"/"+ims.length;'
         'document.body.dataset.h2=document.querySelectorAll("h2").length;'
         # shown whole: inside the page's width, not squeezed out of its aspect ratio
         'const w=document.documentElement.clientWidth;document.body.dataset.whole=ims.filter(i=>{const r=i.'
         'getBoundingClientRect();return r.left>=0&&r.right<=w+0.5&&Math.abs(r.width/r.height-i.naturalWidth/i.'
         'naturalHeight)<0.02;}).length+"/"+ims.length;'
         # every image has a caption that is a sentence
         'document.body.dataset.captioned=ims.filter(i=>{const c=i.parentElement.querySelector("figcaption");'
         'return c&&/^[A-Z].{30,}\\.$/.test(c.textContent.trim());}).length+"/"+ims.length;});</script></body>')


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def test_report_html_renders_in_chromium(tiny_run, tmp_path):
    out, _ = tiny_run
    page = tmp_path / "report.html"
    page.write_text((out / "report.html").read_text().replace("</body>", PROBE))
    done = chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert 'id="report-title"' in dom and "kdforge report: tiny-report" in dom
    n_images = (out / "report.html").read_text().count("<img ")
    assert n_images >= 6
    assert f'data-images-ok="{n_images}/{n_images}"' in dom  # every base64 plot decoded
    assert f'data-whole="{n_images}/{n_images}"' in dom  # no figure clipped by the page at 1100 px
    assert f'data-captioned="{n_images}/{n_images}"' in dom  # every figure has a sentence under it
    assert 'data-h2="' in dom and int(dom.split('data-h2="')[1].split('"')[0]) >= 9

    shot = tmp_path / "shot.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1100,1600", (out / "report.html").as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels[..., :3].std() > 0.05  # painted content, not a blank page
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)

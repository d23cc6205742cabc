"""Distil a network into an explicit decision tree (PAC-distillation), and the baselines it must beat.

    from kdforge.trees import LRHTreeDistiller, JuntaDistiller, SurrogateTree, TrepanTree, SoftDecisionTree, munge

Every estimator follows scikit-learn's classifier API; `fit(X)` takes a pool of unlabelled inputs (or a
`sampler`) and labels them with the teacher. See docs/trees.md. The tree recipe (`kdforge tree RECIPE`) is the
application's: `kdforge.trees.recipe.run_tree_recipe`, which this package does not import.
"""

from kdforge.trees.dp import tree_dp
from kdforge.trees.junta import JuntaDistiller, NotAJuntaError
from kdforge.trees.literals import Literals, choose_literals
from kdforge.trees.lrh import LRHTreeDistiller
from kdforge.trees.munge import MungeSampler, munge
from kdforge.trees.probes import RidgeProbes
from kdforge.trees.soft_tree import SoftDecisionTree
from kdforge.trees.surrogate import SurrogateTree
from kdforge.trees.synthetic import CubeSampler, PlantedTree, random_tree
from kdforge.trees.teachers import train_mlp
from kdforge.trees.tree import Tree
from kdforge.trees.trepan import TrepanTree

__all__ = [
    "CubeSampler", "JuntaDistiller", "LRHTreeDistiller", "Literals", "MungeSampler", "NotAJuntaError", "PlantedTree",
    "RidgeProbes", "SoftDecisionTree", "SurrogateTree", "Tree", "TrepanTree", "choose_literals", "munge",
    "random_tree", "train_mlp", "tree_dp",
]

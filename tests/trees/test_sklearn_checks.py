"""scikit-learn's estimator checks, for every tree distiller, with the non-applicable ones listed with reasons."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from kdforge.trees import JuntaDistiller, LRHTreeDistiller, SoftDecisionTree, SurrogateTree, TrepanTree

from .helpers import first_feature_teacher, square_representation, sum_teacher

FOLLOWS_TEACHER = "a distiller predicts its teacher's classes, not y: y is ignored by design"

# Checks that assume predictions are learned from y. Each distiller's labels come from its teacher
# (here: the sign of the row sum), so its classes_ are the teacher's and accuracy against y is not the goal.
COMMON = {
    "check_classifiers_train": FOLLOWS_TEACHER,
    "check_classifiers_classes": FOLLOWS_TEACHER,
    "check_classifiers_regression_target": "y is ignored, so a continuous y is not an error",
    "check_supervised_y_2d": "y is ignored, so a 2-D y raises no DataConversionWarning",
    "check_supervised_y_no_nan": "y is ignored, so NaN in y is not an error",
}


def expected_failed_checks(estimator):
    if isinstance(estimator, JuntaDistiller):  # its teacher (x[0] > 0.3) is not constant on the one-label data
        return {**COMMON, "check_classifiers_one_label": FOLLOWS_TEACHER}
    return COMMON


@parametrize_with_checks(
    [
        LRHTreeDistiller(sum_teacher, representation=square_representation, max_depth=2, top_k=4, n_probe=60,
                         n_val=60, n_dp=60, n_fidelity=100, random_state=0),
        SurrogateTree(sum_teacher, max_depth=3, n_fidelity=50, random_state=0),
        TrepanTree(sum_teacher, max_leaf_nodes=4, min_samples=30, n_fidelity=50, random_state=0),
        SoftDecisionTree(sum_teacher, depth=2, epochs=2, n_fidelity=50, random_state=0),
        JuntaDistiller(first_feature_teacher, k=2, threshold=0.01, max_error=0.2, n_pairs=50, n_dp=100, n_fidelity=50,
                       random_state=0),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)

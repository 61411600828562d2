"""gan.eval.corruptions: the fid rises with every corruption's severity on real MNIST."""

import pytest

from tests.helpers import REAL_MNIST, needs_real_mnist

pytestmark = [needs_real_mnist, pytest.mark.slow]


def test_fid_rises_with_every_corruption_s_severity(evaluator):
    """The corruption study (``python -m gan.evaluator validate.enabled=true``) on 600 real images: for each of
    the six corruptions the fid grows strictly from clean through severities 1 to 4."""
    from gan.eval.corruptions import CORRUPTIONS, validate_metrics

    rows = validate_metrics(evaluator, str(REAL_MNIST), num_images=600, fid_only=True)
    for name in CORRUPTIONS:
        fids = [r["fid"] for r in rows if r["corruption"] == name]
        assert len(fids) == 5 and all(a < b for a, b in zip(fids, fids[1:], strict=False)), (name, fids)

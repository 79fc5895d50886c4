"""Canary analysis: judges that compare a candidate with the stable revision running at the same time.

``SequentialJudge`` (anytime-valid e-processes) is what pipelines use. ``MannWhitneyJudge`` and
``ThresholdJudge`` are kept for comparison in benchmarks. Judges are pure: they take two
``ArmSample``s and return a ``Judgement`` (data); executors act on it.
"""

from mangaassist.delivery.analysis.baselines import MannWhitneyJudge, ThresholdJudge, Thresholds
from mangaassist.delivery.analysis.judgement import CanaryJudge, Judgement, MetricVerdict
from mangaassist.delivery.analysis.samples import ArmSample, Observation
from mangaassist.delivery.analysis.sequential import JudgeSettings, Segment, SequentialJudge, e_value

__all__ = [
    "ArmSample",
    "CanaryJudge",
    "JudgeSettings",
    "Judgement",
    "MannWhitneyJudge",
    "MetricVerdict",
    "Observation",
    "Segment",
    "SequentialJudge",
    "ThresholdJudge",
    "Thresholds",
    "e_value",
]

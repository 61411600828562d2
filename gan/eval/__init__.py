"""The measurement floor: the MNIST evaluator (a classifier trained on MNIST), the sample-quality metrics computed
from its features, and the corruptions that validate them. Reads MNIST; knows nothing of runs or configs."""

"""Frozen-feature probes: L-BFGS multinomial logistic regression and the weighted kNN classifier."""

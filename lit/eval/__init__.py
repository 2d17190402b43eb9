"""Zero-shot evaluation: classifier, metrics, prediction."""

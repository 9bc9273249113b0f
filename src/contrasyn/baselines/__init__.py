"""Classic one-class baselines, each written here and run in the same harness as CSI."""

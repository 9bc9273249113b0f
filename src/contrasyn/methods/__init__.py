"""The methods: the registry, the paper's (csi), the baselines."""

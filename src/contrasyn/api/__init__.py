"""The product API: the detector, its threshold, saved models, locks, maps, export."""

"""The model zoo: exact Gaussian mixtures, trained networks and their training, data, adapters
for the models users bring, FD-digits features."""

"""The toy model: synthetic shape scenes, their attribute classifier, training and SLD's measured effect on it."""

"""The location prior: p(species | where, when) learned from a dataset's own annotations (`lit prior`)."""

"""Code shared by every mailintake stage: contracts, messaging, store, settings, logging."""

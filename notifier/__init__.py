"""The notifier: turns routed and skipped mail and mailbox failures into notifications."""

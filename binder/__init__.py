"""The binder: parses fetched mail and binds it to an order or a customer, or skips it."""

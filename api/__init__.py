"""The HTTP API: the CRM's door to mailboxes, letters, notifications and managers' status."""

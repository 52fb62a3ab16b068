"""The `mailintake` command: accounts, CRM data, managers, queues, dead letters, the demo."""

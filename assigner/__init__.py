"""The assigner: gives customers created from mail to a manager of the account's group."""

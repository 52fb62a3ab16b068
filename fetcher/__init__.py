"""The fetcher: pulls mail from IMAP and POP3 mailboxes into the pipeline."""

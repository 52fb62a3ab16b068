"""OAuth2 for mailboxes: provider presets, the token endpoint client, PKCE and cached tokens."""

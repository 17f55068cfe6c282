"""Who is calling: agents by key-signed assertions and access tokens, users by API tokens."""

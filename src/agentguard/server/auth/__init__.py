"""Who is calling: API keys, console sessions, Clerk tokens and the agents a key speaks for."""

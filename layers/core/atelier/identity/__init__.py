"""Who is calling: device sign-in, bearer tokens, and the signed-in account."""

//! Registry access: references, auth, pull and push.

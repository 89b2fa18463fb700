"""Security: Curve keys and certificates, JWTs, and the policy that decides who may talk
to a node (docs/security.md). Pure: no sockets here; the runtime carries verdicts out."""

"""engage: exact, self-hosted user-engagement analytics (core library shared by pipeline and API)."""

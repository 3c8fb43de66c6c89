"""The back office: pages and endpoints for operations staff, reading through the apps."""

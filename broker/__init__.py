"""The site's broker side: the Mosquitto configuration (site directory, credentials, TLS, ACL) and the hub."""

"""The door unit: capture -> detect -> describe -> match -> decide -> actuate."""

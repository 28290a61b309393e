"""The wire protocol between the server and its clients, without any I/O."""

"""Front-ends; each only talks to the bus: the terminal conversation (``terminal``)."""

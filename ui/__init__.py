"""Front-ends; each only talks to the bus: the terminal conversation (``terminal``) and the web
page (``web``, launcher.ui=gradio)."""

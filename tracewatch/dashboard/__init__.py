"""The web dashboard the worker serves at ``/dashboard``: its SQL (``queries``), the
alert and breaker markers it draws (``markers``), and its page (``static/``)."""

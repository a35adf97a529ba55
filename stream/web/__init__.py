"""The live web dashboard (``live.py --web``): event history and fan-out (hub.py), the HTTP server
(server.py), the page (static/), and the colours it shares with the report (palette.py)."""

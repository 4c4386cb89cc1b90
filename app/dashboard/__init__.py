"""The Streamlit dashboard: `ticketlab app` starts `main.py`; one module per page in `views/`."""

"""The front doors: the command line and the Streamlit dashboard. Thin: logic lives in the floors below."""

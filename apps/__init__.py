"""The faces of the workbench: the Streamlit app and the `interp` command line."""

"""Plot functions: take the DataFrames the analyses return, give plotly figures."""

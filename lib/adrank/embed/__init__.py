"""Stage 2: embed the catalog with the trained CNN, keep it fresh, export it for serving."""

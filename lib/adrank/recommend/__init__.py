"""recommend: similar SKUs, user recommendations and query to SKU from the catalog's embeddings."""

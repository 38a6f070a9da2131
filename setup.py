"""Packaging for adrank: the importable library lives under lib/adrank."""
from setuptools import find_packages, setup

setup(
    name="adrank",
    version="0.1.0",
    description="Spark + Delta + Horovod pipeline ranking ads with CNN image embeddings",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"adrank": ["py.typed"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "pyspark>=4.0,<4.1",
        "delta-spark>=4.0,<4.1",
        "pyarrow",
        "numpy<2",
        "pandas",
        "pyyaml",
        "pillow",
    ],
    extras_require={
        "train": ["tensorflow-cpu==2.15.1", "horovod==0.28.1", "petastorm==0.13.1"],
    },
)

"""Packaging for adrank: the importable library lives under lib/adrank."""
from setuptools import find_packages, setup

setup(
    name="adrank",
    version="0.1.0",
    description="Spark + Delta + Horovod pipeline ranking ads with CNN image embeddings",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    # conf/tiny.yaml: the tiny config of the adrank.testing plugin (same bytes as the repository's).
    package_data={"adrank": ["py.typed", "conf/*.yaml"]},
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
        "tracking": ["mlflow-skinny==3.18.0"],
        "testing": ["pytest"],
    },
    # The plugin's entry point name is its module name: a conftest that also says
    # pytest_plugins = ["adrank.testing"] then finds it registered and does not load it twice.
    entry_points={"pytest11": ["adrank.testing = adrank.testing"]},
)

"""Packaging of tornado_sse."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="tornado-sse",
    version="0.1.0",
    description="A Server-Sent Events gateway for WSGI backends, on Tornado",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["tornado_sse", "tornado_sse.*"]),
    install_requires=[
        "tornado>=6.3",
        # libcurl keeps callback connections alive and pooled; the gateway falls back to
        # Tornado's own client where pycurl cannot be installed.
        "pycurl>=7.45; platform_system != 'Windows'",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "redis": ["redis>=5.0"],
        # Streams authorised by a JWT (JWT_SECRET, JWT_PUBLIC_KEY); cryptography verifies the
        # asymmetric algorithms (RS*, PS*, ES*, EdDSA).
        "jwt": ["PyJWT>=2.8", "cryptography>=41"],
        "fast": ["uvloop>=0.17; platform_system != 'Windows'"],
        "test": [
            "pytest>=7",
            "pytest-tornado==0.8.1",
            "hypothesis>=6",
            "selenium>=4.10",
            "flask>=3.0",
            "PyJWT>=2.8",
            "cryptography>=41",
        ],
        "lint": ["ruff>=0.4", "mypy>=1.8"],
    },
    entry_points={"console_scripts": ["tornado-sse = tornado_sse.__main__:main"]},
    classifiers=[
        "Framework :: Tornado",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)

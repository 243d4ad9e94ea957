"""HTTP entry points, one blueprint per concern, wired by `factory.create_app`.

The web layer is an adapter: it parses requests, checks access and renders templates. It imports the services
and read models at the package root and the domain; it never imports `models`, sqlalchemy or `sandbox/`.
"""

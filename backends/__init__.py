"""Backend adapters: one module per array library, everything the Array API standard leaves out.

Each module exposes ``create(device)``, ``create_for(array)``, ``owns(array)`` and
``unavailable_reason()`` (``None`` when the library can run here).
"""

"""anny ⇄ Microsoft 365 room calendar sync: the product code behind function_app.py."""

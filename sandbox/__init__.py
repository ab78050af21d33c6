"""Local emulators of Microsoft Graph and the anny Admin API (test and dev only).

Excluded from deployment by `.funcignore`.
"""

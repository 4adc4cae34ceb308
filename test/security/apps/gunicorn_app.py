"""The WSGI app gunicorn serves (gunicorn --chdir <this dir> gunicorn_app:app)."""
from record import wsgi_app

app = wsgi_app("gunicorn")

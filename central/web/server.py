"""Serving the dashboard with waitress, in a named thread that stops on request."""

import logging
import threading

from waitress.server import create_server

logger = logging.getLogger(__name__)


class DashboardServer:
    """The dashboard app served by waitress on ``host:port`` (port 0 picks a free one).

    ``start()`` returns at once; ``url`` is then the address to open.
    ``stop()`` closes the listening socket and joins the thread.
    """

    def __init__(self, app, *, host="127.0.0.1", port=8080, threads=4, behind_proxy=False):
        # waitress's own proxy handling stays off: the app applies ProxyFix
        # itself when web.behind_proxy is set, so the two never disagree.
        self._server = create_server(app, host=host, port=port, threads=threads, ident="bytelocker",
                                     clear_untrusted_proxy_headers=not behind_proxy)
        self._thread = None

    @property
    def url(self):
        host, port = self._server.effective_host, self._server.effective_port
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.run, name="dashboard-http", daemon=True)
        self._thread.start()
        logger.warning("Staff dashboard listening on %s.", self.url)
        return self

    def stop(self, timeout=5.0):
        self._server.close()
        # Wakes waitress's select loop so run() sees the closed map and returns.
        self._server.task_dispatcher.shutdown(timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout)

"""The endpoint's baseline: a bare Tornado handler returning a pre-encoded body, in one process like
horizon's endpoint worker. ``python -m bench.bare_endpoint PORT BODY_FILE``."""

import sys

import tornado.ioloop
import tornado.web


def main() -> None:
    port, body_file = int(sys.argv[1]), sys.argv[2]
    with open(body_file, "rb") as handle:
        body = handle.read()

    class Bare(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(body)

    tornado.web.Application([(r"/metrics", Bare)]).listen(port, address="127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()

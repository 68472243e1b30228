# An allocation-heavy Python workload whose output is deterministic: run
# with PYTHONMALLOC=malloc so every object comes from the process's malloc.
#   python3 alloc_heavy.py [scale]
import hashlib
import json
import queue
import sys
import threading

scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
digest = hashlib.sha256()


def note(value):
    digest.update(repr(value).encode())


class Node:
    def __init__(self, key, children):
        self.key = key
        self.children = children
        self.label = "node-%d" % key


def tree(depth, key):
    if depth == 0:
        return Node(key, [])
    return Node(key, [tree(depth - 1, key * 3 + i) for i in range(3)])


def walk(node):
    return node.key + sum(walk(c) for c in node.children)


for round_ in range(3 * scale):
    # Dicts of strings and tuples, grown then dropped.
    d = {str(i) * 2: (i, str(i), [i] * (i % 7)) for i in range(20000)}
    note(sum(len(k) + len(v[2]) for k, v in d.items()))
    del d
    # Many small objects with cycles for the cycle collector.
    t = tree(7, round_)
    note(walk(t))
    for n in t.children:
        n.parent = t
    del t
    # Strings of every size, joined and split.
    words = ["w%x" % (i * 2654435761 % 100003) * (1 + i % 40) for i in range(10000)]
    text = " ".join(words)
    note(len(text.split()))
    # JSON round trip: many short-lived containers.
    blob = json.dumps([{"k": i, "v": [i, i + 1, str(i)]} for i in range(5000)])
    note(sum(item["k"] for item in json.loads(blob)))
    # Large buffers, resized.
    buf = bytearray()
    for i in range(2000):
        buf += bytes([i % 256]) * (i % 300)
    note(len(buf))
    # Sorting tuples.
    note(sorted((i * 7919 % 1000, str(i)) for i in range(20000))[:3])

# Objects made on one thread, dropped on another.
q = queue.Queue()


def producer():
    for i in range(2000 * scale):
        q.put([str(i)] * 10 + [{"i": i}])
    q.put(None)


def consumer(out):
    total = 0
    while True:
        item = q.get()
        if item is None:
            break
        total += len(item[0]) + item[-1]["i"]
    out.append(total)


out = []
threads = [threading.Thread(target=producer), threading.Thread(target=consumer, args=(out,))]
for th in threads:
    th.start()
for th in threads:
    th.join()
note(out)
print(digest.hexdigest())

"""An asyncio program with AsyncNode: coroutine handlers and subscriptions.

python examples/asyncio_app.py
"""

from __future__ import annotations

import asyncio

from zcluster import AsyncNode


async def main() -> None:
    async with AsyncNode("worker") as worker:

        async def resize(job: dict[str, int], sender: str) -> dict[str, int]:
            await asyncio.sleep(0.01)  # stands in for real async work
            return {"width": job["width"] // 2, "height": job["height"] // 2}

        worker.register("resize", resize)

        async with AsyncNode("frontend", seeds=[worker.address]) as frontend:
            events: asyncio.Queue[str] = asyncio.Queue()

            async def on_done(topic: str, message: str, sender: str) -> None:
                await events.put(f"{sender}: {message}")

            await frontend.subscribe("jobs.done", on_done)
            await worker.wait_for(lambda: "frontend" in worker.subscribers("jobs.done"), 5)

            result = await frontend.request("worker", "resize", {"width": 640, "height": 480})
            print("resized to", result)
            await worker.publish("jobs.done", "resize finished")
            print("event:", await asyncio.wait_for(events.get(), 5))


if __name__ == "__main__":
    asyncio.run(main())

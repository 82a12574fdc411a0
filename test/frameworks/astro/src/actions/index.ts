import { defineAction } from "astro:actions";
import { Counter } from "../state";

export const server = {
  inc: defineAction({
    handler: () => {
      const counter = new Counter();
      counter.count += 1;
      return counter.count;
    },
  }),
};

import { Controller, Get, HttpCode, Post } from "@nestjs/common";
import { clearCookieState } from "persist-session";
import { AppState, hold, holding, releaseHold, sessions } from "./state";

/** The routes that use state: the middleware is applied to this controller alone. POSTs answer 200, as in the other frameworks' apps. */
@Controller("app")
export class StateController {
  @Get("count")
  count() {
    return { count: new AppState().count };
  }

  @HttpCode(200) // the check expects what the other frameworks answer
  @HttpCode(200)
  @Post("inc")
  inc() {
    const state = new AppState();
    state.count += 1;
    return { count: state.count };
  }

  @HttpCode(200)
  @Post("reset")
  async reset() {
    const state = new AppState();
    await clearCookieState(state);
    return { count: state.count };
  }

  @HttpCode(200)
  @Post("fail")
  fail() {
    new AppState().count += 100;
    throw new Error("boom");
  }

  @Get("hold")
  async hold() {
    const state = new AppState();
    await hold();
    return { count: state.count };
  }
}

/** Routes that never use state. */
@Controller()
export class PlainController {
  @Get("plain")
  plain() {
    return "plain";
  }

  @Get("holding")
  holding() {
    return holding();
  }

  @HttpCode(200)
  @Post("release")
  release() {
    releaseHold();
    return "released";
  }

  @Get("streams")
  streams() {
    return { open: sessions.openStreams };
  }
}

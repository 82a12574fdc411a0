import { StateController } from "./controllers";
import { sessions } from "./state";

// #region readme
import { Controller, Get, Module, Req, Res, type MiddlewareConsumer, type NestModule } from "@nestjs/common";
import type { Request, Response } from "express";

@Controller() export class EventsController {
  @Get("events") events(@Req() req: Request, @Res() res: Response) { sessions.events(req, res); }
}
@Module({ controllers: [StateController, EventsController] })
export class AppModule implements NestModule {
  configure(consumer: MiddlewareConsumer) { consumer.apply(sessions).forRoutes(StateController); } // only its routes take the state's lock
}
// #endregion readme
